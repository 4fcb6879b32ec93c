"""The `lookout` command: one entry point that dispatches to every service and tool."""
