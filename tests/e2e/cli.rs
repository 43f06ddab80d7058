//! The binary: exit codes, subcommands, signals.
