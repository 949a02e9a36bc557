# the entry point: greet each argument
for name in "${@:-world}"; do
    greet "$name"
done
