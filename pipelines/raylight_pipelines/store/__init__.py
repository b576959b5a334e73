"""The vector store: one facade (`Store`, store.base) with two backends, a Qdrant server through qdrant-client
(store.server) and Qdrant's engine embedded in-process (store.edge); `store.qdrant.connect` opens either."""
