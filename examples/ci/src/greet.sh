# greet NAME: the greeting the tool prints
greet() {
    printf 'hello, %s\n' "${1:-world}"
}
