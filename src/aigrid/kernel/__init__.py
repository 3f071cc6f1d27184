"""The agent kernel: agent specs run as durable processes, tools as system calls."""
