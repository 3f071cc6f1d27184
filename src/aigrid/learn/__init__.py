"""Self-iteration: traces and feedback, verifiers, held-out evals and the experience memory."""
