"""Workers: live feature extraction, the Redis bus and schemas, the inference worker."""
