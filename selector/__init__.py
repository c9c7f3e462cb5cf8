"""heedful.selector"""
