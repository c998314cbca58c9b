"""Where the offline pretrained assets live (installed as wheels by scripts/setup.sh; see shared/docs/assets.md).

Nothing here downloads: each function returns a local path or raises `AssetMissing` saying how to install it.
"""

