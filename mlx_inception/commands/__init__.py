"""One module per ``mlx-inception`` subcommand: argument parsing and output, nothing more."""
