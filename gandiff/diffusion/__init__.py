"""Diffusion: Stable Diffusion components, multi-identity LoRA DreamBooth, prompt banks, batched generation.

Import-light on purpose (config.py imports ``schema`` at CLI start): torch, diffusers and lightning
load only in the modules that need them.
"""
