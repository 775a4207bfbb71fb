"""pixelguard: how few pixels does it take to fool your image classifier?"""

__version__ = "0.1.0"
