"""People and judges labeling pairs: labels, annotators, queues, agreement."""
