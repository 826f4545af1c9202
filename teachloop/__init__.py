"""teachloop: teacher-student synthetic curricula for LLM reinforcement learning."""

__version__ = "0.1.0"
