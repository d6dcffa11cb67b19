"""The SQLite store: schema, the writer's side, the readers' side."""
