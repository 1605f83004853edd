"""latentwalk: images and latent-space interpolation videos from diffusion models."""

__version__ = "0.2.0"
