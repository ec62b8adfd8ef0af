"""LapVerse Streams: governed multi-tenant work on Kafka."""
