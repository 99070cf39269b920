"""The watch and settle stages: file-system events in, paths that stopped changing out.

`folders` says which paths are ours, `roots` whether each watched folder is there (mounted),
`observe` turns watchdog's events into intents, `settle` holds each path until it has been
quiet for the settle time.
"""
