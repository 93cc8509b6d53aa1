"""cotdistill: distil chain-of-thought reasoning from teacher LLMs into small students.

Pipeline, one module per stage (see README):
tasks -> prompts/teachers -> traces -> curate -> train -> evaluate -> study/report -> select
"""

__version__ = "0.1.0"
