# Stand-in for pytorch/pytorch (the base of Dockerfile.inference) where no registry
# can be reached: Debian bookworm's Python 3.11 with torch from PyPI installed into
# the system site-packages and pip, which is all Dockerfile.inference relies on.
# Built and tagged with the real name by scripts/compose-stack.sh; never pushed.
ARG ROOTFS
FROM ${ROOTFS}
ARG TORCH_VERSION
# The host's CA bundle: HTTPS from the build machine's network may be intercepted by
# a CA that only the host trusts. Only the stand-ins carry it, never the real images.
COPY host-ca.crt /etc/ssl/host-ca.crt
ENV PIP_CERT=/etc/ssl/host-ca.crt \
    SSL_CERT_FILE=/etc/ssl/host-ca.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/host-ca.crt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m pip install "torch==${TORCH_VERSION}" \
 && python3 -c "import torch; print('torch', torch.__version__)"
LABEL org.opencontainers.image.description="embed-multi stand-in for pytorch/pytorch"
