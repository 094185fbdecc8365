module concord/ops/benchtools

go 1.22
