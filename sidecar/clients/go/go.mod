module lockstep/client

go 1.22
