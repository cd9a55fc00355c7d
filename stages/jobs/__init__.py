"""The jobs family: a job service as a graph (`flow serve`): an HTTP intake
(`jobs`), calls to vendors that answer at once or later through a webhook
(`vendor`), and a durable job store (`job_store`)."""
