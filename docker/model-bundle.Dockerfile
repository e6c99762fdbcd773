# syntax=docker/dockerfile:1
# A model bundle for k8s' init container (k8s/base/serving-deployment.yaml, `copy-model`): exported versions under
# /bundle/<name>/<version>/. The build context is the models directory itself:
#   docker build -f docker/model-bundle.Dockerfile -t glimpse/model-bundle:tuxpaint-1 models/
FROM busybox:1.36
COPY . /bundle/
USER 1000:1000
