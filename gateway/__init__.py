"""The gateway: a FastAPI app that turns the HTTP API into Triton requests.

Packages, from the bottom up; each imports only from those below it (tests/gateway/test_layers.py):
  settings, errors, metrics   what every other part shares
  store/                      jobs, events, results, queues and batches, in memory or in Redis
  triton/, webhooks/          the two things the gateway talks to: Triton, and callback targets
  jobs/                       admission, reading, following, waiting, cancel; the runner
  batches/                    batches of jobs
  http/                       routes, forms, views, auth, middleware, OpenAPI, the page
  app                         create_app builds every service and hands each its collaborators
"""
