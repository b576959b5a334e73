"""LangGraph graphs, one module each; `raylight_agents.registry` maps `spec.agent.graph` names to them."""
