"""Small documented examples of using tokenbill from other systems."""
