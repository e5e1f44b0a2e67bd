/* pick */ SELECT	*  -- all
 FROM /* schema */ fetchq . doc_pick ( /* q */ 'q' , -- version
 0 , 1 , '5m' ) ; -- done