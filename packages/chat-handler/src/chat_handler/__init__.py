"""Text chat answered with retrieval and an LLM, as a Ray Serve application.

Not built yet: this package only reserves its place in the workspace. Its issue
(see the project's issue list) brings the code.
"""

__version__ = "0.1.0"
