"""heedful.store"""
