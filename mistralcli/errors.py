"""Errors a user can cause and fix; the CLI prints them as one line, without a traceback."""


class MistralError(Exception):
    """A problem with the user's model, file or input (exit code 1)."""


class ModelLoadError(MistralError):
    """A model file or directory that cannot be read: names the file and what is wrong."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
