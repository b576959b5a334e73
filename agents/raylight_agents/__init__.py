"""Raylight's agents: LangGraph graphs served as HTTP endpoints."""
