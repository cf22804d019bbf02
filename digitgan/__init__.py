"""digitgan: the library beneath dcgan.py (a DCGAN that writes MNIST digits)."""
