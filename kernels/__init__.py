"""heedful.kernels"""
