"""The command line: the only reader of the environment and config files; thin subcommands."""
