"""Open gandiff report HTML files in headless Chromium and check that every plot renders.

usage: python scripts/check_report_browser.py experiments/demo/report/<key>/report.html [more.html ...]
Exit status 1 when an image is missing or broken; needs `apt-get install -y chromium`.
"""

from __future__ import annotations

import sys

from gandiff.evaluation.report import browser_check, html_images_ok


def main(paths: list[str]) -> int:
    bad = 0
    for p in paths:
        total, problems = html_images_ok(open(p, encoding="utf-8").read())
        loaded, shown = browser_check(p)
        ok = not problems and loaded == shown == total and total > 0
        print(f"{'ok ' if ok else 'BAD'} {p}: {loaded}/{shown} images rendered in Chromium, {total} embedded"
              + (f"; {problems}" if problems else ""))
        bad += not ok
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1:]))
