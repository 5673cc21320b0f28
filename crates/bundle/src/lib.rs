//! The bundle format: a streaming MIME multipart/mixed writer and an index-driven reader.
