echo "Welcome: the toolbox is ready in /usr/local/bin"
