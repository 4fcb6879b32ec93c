"""`lookout lab`: several emulated hosts on one machine, joined by shaped links, running the real services.

One Linux network namespace per host, a Linux bridge in a namespace of its own as the switch, one veth
pair per host, link-local addresses (169.254.0.0/16) and no route out. ``model`` is the lab file,
``plan`` turns it into names, addresses, ``ip``/``tc`` commands and service command lines (pure),
``netns`` runs them, ``state`` is the state file that lets ``lab down`` undo everything after a crash,
``up``/``down`` create and remove a lab, ``faults`` cut, heal and kill, ``recorder`` writes the CSV and
JSON summary every few seconds, and ``report`` turns them into plots and a table. See docs/lab.md.
"""
