"""`heedful bench tasks`: tasks that others defined (RULER's needle-in-a-haystack family and
variable tracking, MT-Eval's multi-turn recollection) on a real model, heedful's policies and
the person's pins beside kvpress's presses at the same KV rows. tasks.py: the episodes and
their sources; policies.py: heedful's policies on an episode; learned.py: the picker trained
on the other tasks; peers.py and peer_runner.py: kvpress in its own environment; report.py:
tables and the plot; cli.py: the command. See docs/tasks.md."""
