"""xcronctl: the command line for xcron."""
