module lockstep/gohost/hostapi

go 1.25.0
