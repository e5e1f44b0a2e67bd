-- fetchq
;;