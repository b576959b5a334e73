"""Raylight's data plane: model serving on Ray Serve, document ingestion and retrieval."""
