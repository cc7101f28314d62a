module github.com/turnbox/turnbox

go 1.26
