# the tests: run the built tool and compare
set -e
out=$(sh /in/build/bin/greet Ada)
test "$out" = "hello, Ada" || { echo "FAIL: greet Ada gave '$out'"; exit 1; }
echo "ok 1 greet Ada"
test "$(sh /in/build/bin/greet)" = "hello, world"
echo "ok 2 greet with no name"
