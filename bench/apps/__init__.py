"""The comparison servers: a bare FastAPI + LangChain agent, with and without a checkpointer."""
