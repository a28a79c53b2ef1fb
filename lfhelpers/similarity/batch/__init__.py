"""Batch jobs: embeddings as Parquet shards, on Dask workers."""
