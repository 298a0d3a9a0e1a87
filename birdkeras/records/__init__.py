"""TFRecords: the record format (`format`), the resumable shard writer (`shard_writer`),
building and verifying shards (`shards`) here or on Beam (`jobs`), the `tf.data`
training pipeline (`pipeline`) and its batch augmentation (`mixing`)."""
