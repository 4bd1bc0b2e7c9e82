"""Series as LLMTime text and tokens: the codec, the grammar of well-formed output, training chunks, and the
evaluation windows of the two protocols. No torch."""
