"""The backend's HTTP API: the route table, who may call each route, the request and
response models, and the OpenAPI document generated from them."""
