"""heedful.tui"""
