"""One-shot provisioning steps the container deployments run (docker-compose.yml,
deploy/podman/biomero-pod.sh); nothing in the worker imports them."""
