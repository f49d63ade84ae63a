#!/bin/bash
docker logs greeter 2>/dev/null | grep -qx 'hello from mini'
