#!/bin/bash
# Docker starts after SSH: wait for it (the background's timeout bounds this).
until docker info >/dev/null 2>&1; do sleep 1; done
docker rm -f greeter >/dev/null 2>&1 || true
docker rmi -f mini:1 >/dev/null 2>&1 || true
rm -rf ~/mini
