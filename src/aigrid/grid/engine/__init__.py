"""The embedded engine: llama.cpp decoding many sequences in one batch, with a prefix cache."""
